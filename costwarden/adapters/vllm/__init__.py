"""vLLM serving configurations: vLLM's argument table as data, a parser with vLLM's semantics,
and detection of vLLM inside Kubernetes objects, Helm values and config files.

::

    >>> from costwarden.adapters.vllm.parser import parse_command
    >>> r = parse_command("vllm serve meta-llama/Llama-3.1-8B --max-num-seq 64 --no-enable-prefix-caching")
    >>> r.args["max_num_seqs"], r.args["enable_prefix_caching"], sorted(r.explicit)
    (64, False, ['enable_prefix_caching', 'max_num_seqs', 'model', 'model_tag'])

Importing this package imports nothing heavy; ``vllm`` itself is only imported by
:func:`costwarden.adapters.vllm.parser.parse_exact` and by the table generator.
"""
