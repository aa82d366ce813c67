"""``python -m vipet ...`` (also what ``torchrun -m vipet`` and ``accelerate launch -m
vipet`` run): the same entry point as the ``vipet`` command."""

from vipet.cli import main

raise SystemExit(main())
