"""HAAQI-Net: a learned, non-intrusive predictor of HAAQI for hearing-aid music.

Modules (import them directly; this package imports nothing, not even torch):

* ``haaqinet.fbank``: Kaldi-compatible log-mel filterbank in torch.
* ``haaqinet.frontends``: the front-end contract and registry, and the ``mel`` front end.
* ``haaqinet.beats``: a BEATs encoder that loads the official checkpoints (front end ``beats``).
* ``haaqinet.hf``: any local transformers audio encoder (front end ``hf``).
* ``haaqinet.model``: the ``HAAQINet`` network and its loss.
* ``haaqinet.checkpoint``: self-describing checkpoints with a JSON sidecar.

See docs/haaqinet.md.
"""
