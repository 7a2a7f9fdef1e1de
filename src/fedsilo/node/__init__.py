"""The institution's side, free of Flower: who this node is, and its round.

If you look for:
- which institution a node serves, its own data, this process's backbone, device and
  feature cache: ``silo.py``;
- one institution's training and evaluation round, as a pipeline of named steps (FedProx,
  SCAFFOLD, DP-SGD, clipping, personal models, poisoning): ``round.py``;
- what an institution keeps between rounds, and its copy on its own disk: ``memory.py``.
The ClientApp (``clients/``) is the Flower adapter around these.
"""
