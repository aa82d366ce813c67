"""Figures for people: study pictures, later report summaries and plots."""
