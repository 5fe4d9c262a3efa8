"""modelhost's own LLM engine: sampling, incremental detokenisation, chat templates, and
(scheduled, continuous-batching) generation over the native models in ``modelhost.nn``."""
