"""Reusable pieces of the dashboard's pages: forms, plotly charts, mask overlays, links, tables."""
