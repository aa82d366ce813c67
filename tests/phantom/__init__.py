"""Tests of the ViPET-Phantom generator."""
