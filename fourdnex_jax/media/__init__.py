"""Media IO and resampling: images, videos, arrays and JSON on disk (atomic writes), Pillow-exact resizes."""
