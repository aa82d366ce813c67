"""From studies and ground truth to what the language model reads.

- `vipet.data.tokenizer` — the special tokens (visual placeholder, modality and region
  markers, chat roles) kept in one list, ViPET's chat template, a byte-level BPE
  tokenizer trained on report and question text (or the same tokens added to any
  pretrained tokenizer), and its local save / load.
- `vipet.data.prompts` — the one set of prompt builders for training and inference (VI /
  EN report and question prompts with their visual block), training examples with
  answer-only labels, inference ids, and which report text is the target of a region or
  whole-study prompt.
- `vipet.data.dataset` — `ViPetDataset`: report and question examples of one split
  (region and/or whole-study scope, VI / EN) mixed by task ratio in a seeded order,
  with their cached CT/PET/ROI volumes and findings targets; `collate` and
  `RegionCountBatchSampler` batch items with the same number of regions.

Submodules are imported explicitly (``from vipet.data.prompts import report_prompt``):
importing the package alone stays cheap and pulls in no transformers.
"""
