"""Every weight file format and every load / restore / convert path (PyTorch diffusers / transformers / peft /
4DNeX <-> orbax), one job per module. The tables themselves live with the models (:mod:`fourdnex_jax.models.mapping`
is their engine), so ``models`` never imports this package.

  * :mod:`.safetensors`: the one safetensors reader (header validation, lazy reads, file-order streaming with
    sha256) and the streaming sharded writer;
  * :mod:`.torch_pickle`: the torch ``.pt`` zip format, read and written without torch and without executing code;
  * :mod:`.orbax`: orbax checkpoints written array slice by array slice (a custom orbax ``TypeHandler``) and
    restored into given shardings;
  * :mod:`.registry`: what differs per model (transformer, VAE, UMT5, CLIP): folder, config, table, abstract model,
    key renames; the converted-folder / bundle layout;
  * :mod:`.from_diffusers`: a diffusers / transformers folder or torch state dict -> each model;
  * :mod:`.restore`: the one restore path of converted folders, bundles and training bases, into a mesh;
  * :mod:`.adapter`: the 4DNeX adapter folder (LoRA safetensors + ``learnable_domain_embeddings.pt``), its
    effective LoRA scale;
  * :mod:`.manifest`: ``manifest.json`` and file hashing;
  * :mod:`.torch_to_jax`, :mod:`.jax_to_torch`: the two conversions (``fourdnex convert`` / ``fourdnex export`` are
  their command line).
"""
