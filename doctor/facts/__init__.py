"""Fact providers: one module per source of truth."""
