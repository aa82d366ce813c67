"""ViPET-VLM: 3D encoders, PET/CT fusion, resampler + projector, findings head, language model."""
