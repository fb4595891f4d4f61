"""One module per task family of the unified dataset; recfound.data.build assembles them."""
