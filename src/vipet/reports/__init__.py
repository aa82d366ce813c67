"""Findings schema, report rendering (VI/EN), questions, and later text→findings extraction."""
