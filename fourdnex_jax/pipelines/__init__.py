"""Image -> 4D sampling: ``bundle`` (load/save a self-describing model bundle), ``settings`` (SampleSettings: the
bundle's preset + overrides), ``inputs`` (sizing, resize, captions), ``image_to_4d`` (ImageTo4D and its denoising
step), ``outputs`` (files and geometry of a result), ``aot`` (compilation caches), ``plan`` (AOT memory plans of the
pipeline's programs on TPU slices and GPU cards)."""
