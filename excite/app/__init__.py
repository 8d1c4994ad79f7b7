"""The application on top of the library: the `excite` command (`cli`) and its jobs (train, predict,
info, convert, export) and the benchmark (`bench`)."""
