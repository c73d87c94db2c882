"""Checkpoint conversion between PyTorch (diffusers / transformers / peft / 4DNeX) and orbax, both ways.

One job per module:
  * :mod:`.safetensors_stream`: torch-free safetensors reading in file order (pread, sha256 on the fly) and a
    streaming sharded writer;
  * :mod:`.pt_reader` / :mod:`.pt_writer`: the torch ``.pt`` zip format without torch and without executing code;
  * :mod:`.orbax_io`: orbax checkpoints written array slice by array slice (a custom orbax ``TypeHandler``) and
    restored straight into a mesh sharding;
  * :mod:`.models`: what differs per model (transformer, VAE, UMT5, CLIP): folder, config, table, abstract model;
  * :mod:`.adapter`: the 4DNeX adapter folder (LoRA safetensors + ``learnable_domain_embeddings.pt``), its
    effective LoRA scale;
  * :mod:`.manifest`: ``manifest.json`` and file hashing;
  * :mod:`.torch_to_jax`, :mod:`.jax_to_torch`, :mod:`.restore`: the three user-facing operations
    (``tools/convert.py`` is their command line).
"""
