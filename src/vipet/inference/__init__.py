"""Inference: encode a study once, then write reports and answer questions."""
