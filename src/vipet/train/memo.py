"""The frozen vision side's outputs, computed once per region volume.

In the language phase of training the encoders, fusion and findings head are frozen
(`TrainConfig.freeze_vision`): what they make of a training volume — the fused tokens
and the head's detections — is the same at every step. `VisionMemo` keeps it per
(study, region) the first time a batch needs it, so the language phase runs only the
projector, the slots and the language model. Why it matters on a CPU: for cpu-small the
vision side of one region costs about as much as a whole language step, and a
whole-study question shows three regions.

Entries hold the fused tokens in bfloat16 (110 KB a volume for cpu-small) and the
detections; the voxel maps are not kept (12 MB a volume). A resumed run starts with an
empty memo and refills it from the same frozen weights, so it follows the same curve up
to float rounding (its volumes share vision passes, `chunk`, in other groupings: the
final weights of a resumed test run differ by ~4e-7; ``chunk=1`` makes it exact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from vipet.data.tokenizer import WHOLE
from vipet.model.findings_slots import Detections, teacher_detections
from vipet.model.vipet import ViPetModel, VisionOutput
from vipet.reports.schema import REGIONS


def _keys(batch: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One key per volume of the batch, in the batch's (B, R) order."""
    out = []
    for sid, region in zip(batch["study_id"], batch["region"], strict=True):
        out.extend((sid, r) for r in (REGIONS if region == WHOLE else (region,)))
    return out


def cat_detections(parts: Sequence[Detections]) -> Detections:
    """Detections of several volume sets, in order, as one."""
    return Detections(
        torch.cat([d.features for d in parts]),
        torch.cat([d.filled for d in parts]),
        torch.cat([d.rows for d in parts]),
        torch.cat([d.scores for d in parts]),
        torch.cat([d.voxels for d in parts]),
        [a for d in parts for a in d.attributes],
    )


def slots_by_task(
    batch: Mapping[str, Any], teacher: Detections, head: Detections, tasks: Sequence[str]
) -> Detections:
    """Per volume of ``batch`` (in `_keys` order): the ``teacher`` slots when its example's
    task is one of ``tasks``, else the ``head``'s detections (`TrainConfig.question_slots`:
    reports on the lesions they describe, questions on what the head found)."""
    use = []
    for task, region in zip(batch["task"], batch["region"], strict=True):
        use.extend([task in tasks] * (len(REGIONS) if region == WHOLE else 1))
    if all(use):
        return teacher
    if not any(use):
        return head
    parts = [(teacher if u else head).select([i]) for i, u in enumerate(use)]
    mixed = cat_detections(parts)
    # teacher slots carry no words: a list for some volumes only would misalign
    return mixed if all(p.attributes for p in parts) else replace(mixed, attributes=[])


class VisionMemo:
    """``(study, region) → `VisionOutput` of one volume`` for a frozen vision side."""

    def __init__(self, chunk: int = 2, on_encoded: Callable[..., None] | None = None) -> None:
        self.chunk = chunk
        """Volumes run through the vision side at once when filling the memo."""
        self.on_encoded = on_encoded
        """Called with each chunk's ``(keys, dense, ct, pet, zones, lesion_ids)`` — the
        head's voxel maps of volumes new to the memo, the volumes ``(V, D, H, W)``, their
        own slices ``(V, 2)`` and lesion-id maps — before the maps are dropped: the
        candidate scorer's examples after training are read from them
        (`vipet.inference.rescore.PeakBook`), not from a second pass over the split."""
        self._store: dict[tuple[str, str], VisionOutput] = {}
        self._teacher: dict[tuple[str, str, bytes], Detections] = {}

    def __len__(self) -> int:
        return len(self._store)

    def get(self, key: tuple[str, str]) -> VisionOutput | None:
        """The kept output of one volume ``(study, region)``, None when not seen."""
        return self._store.get(key)

    @torch.no_grad()
    def vision(self, model: ViPetModel, batch: Mapping[str, Any], autocast: Any) -> VisionOutput:
        """The `VisionOutput` of ``batch``'s volumes (B·R of them), computing the ones
        not seen yet with ``model.vision`` under the ``autocast`` context."""
        keys = _keys(batch)
        missing = [i for i, k in enumerate(keys) if k not in self._store]
        if missing:
            ct, pet, zones = (batch[k] for k in ("ct", "pet", "zones"))
            flat = lambda x: x.reshape(-1, 1, *x.shape[2:])[missing]  # noqa: E731
            dev = next(model.parameters()).device
            cts, pets, zs = flat(ct), flat(pet), zones.reshape(-1, 1, 2)[missing]
            # A few volumes at a time: cpu-small's full-volume activations at batch 8 no
            # longer fit the CPU caches and cost noticeably more per volume than at 2.
            for lo in range(0, len(missing), self.chunk):
                part = slice(lo, lo + self.chunk)
                chosen = missing[part]
                # as one study of these regions: a candidate scorer (`question_slots`
                # "head") reads each volume's region
                one_study = lambda x: x.transpose(0, 1)  # noqa: E731
                with autocast:
                    out = model.vision(
                        one_study(cts[part]).to(dev, torch.float32),
                        one_study(pets[part]).to(dev, torch.float32),
                        one_study(zs[part]).to(dev),
                        [keys[i][1] for i in chosen],
                    )
                    if self.on_encoded is not None and out.dense is not None:
                        ids = batch["lesion_ids"].reshape(-1, *batch["lesion_ids"].shape[2:])
                        self.on_encoded(
                            [keys[i] for i in chosen],
                            out.dense,
                            cts[part][:, 0],
                            pets[part][:, 0],
                            zs[part][:, 0],
                            ids[chosen],
                        )
                out.dense = None  # not kept: do not slice the voxel maps per volume
                for j, i in enumerate(chosen):
                    one = out.select([j])
                    self._store[keys[i]] = VisionOutput(
                        one.fused.to(torch.bfloat16),
                        one.grid,
                        one.image_shape,
                        None,
                        one.detections,
                    )
        entries = [self._store[k] for k in keys]
        first = entries[0]
        detections = (
            None if first.detections is None else cat_detections([e.detections for e in entries])  # type: ignore[misc]
        )
        return VisionOutput(
            torch.cat([e.fused for e in entries]).to(model.dtype),
            first.grid,
            first.image_shape,
            None,
            detections,
        )

    def teacher(
        self, model: ViPetModel, batch: Mapping[str, Any], grid: tuple[int, int, int]
    ) -> Detections:
        """Teacher slots (`teacher_detections`) of ``batch``'s volumes: they depend on the
        data only, so each volume's are built once (from its full-resolution lesion map,
        the costliest part of a language step before) and kept with its vision output."""
        attrs = batch["filed_attrs"].reshape(-1, *batch["filed_attrs"].shape[2:])
        # a question example may leave lesions out of a volume's slots
        # (`DataConfig.question_slot_drop`): the rows are part of the key
        keys = [(*k, a.cpu().numpy().tobytes()) for k, a in zip(_keys(batch), attrs, strict=True)]
        missing = [i for i, k in enumerate(keys) if k not in self._teacher]
        if missing:
            filed = batch["filed_lesions"].reshape(-1, *batch["filed_lesions"].shape[2:])
            det = teacher_detections(filed[missing], attrs[missing], grid, model.head_shape)
            for j, i in enumerate(missing):
                self._teacher[keys[i]] = det.select([j])
        return cat_detections([self._teacher[k] for k in keys])
