"""Developer build scripts (``python -m tools.<script>``); no runtime package imports them."""
