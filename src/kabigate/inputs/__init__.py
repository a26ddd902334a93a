"""What a user points kabigate at, read into the model: kernels (files, trees, packages),
modules, packages and repositories, stablelists, and the one HTTP client that fetches them."""
