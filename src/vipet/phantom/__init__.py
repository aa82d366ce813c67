"""ViPET-Phantom: synthetic whole-body FDG PET/CT studies with known ground truth.

- `vipet.phantom.anatomy`: a patient (sex, age, height, weight) → an organ label volume
  with realistic anatomy, lesion landmarks and vertebral levels, and its CT (HU) and true
  FDG uptake (SUV) per DOMAIN §7 (`build_anatomy`, `tissue_values`); the shapes live in
  `plan`, `shapes`, `body`, `head`, `skeleton`, `thoracic_wall`, `thorax`, `abdomen`,
  `bowel`, the values in `tissues`.
- `vipet.phantom.lesions`: what lesions a study has, where, how big and how avid.
- `vipet.phantom.simulate`: anatomy + lesions → CT and PET as a scanner gives them.
- `vipet.phantom.dataset`: many studies written in the on-disk layouts `vipet.io` reads.

World frame: LPS mm, z = 0 at the vertex, the body toward −z.
"""
