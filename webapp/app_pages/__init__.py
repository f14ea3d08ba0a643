"""One module per dashboard page, named after what the user sees; each calls ``render()`` when run."""
