"""Privacy: what may leave an institution (the boundary), and later clipping, noise,
accountants and audits."""
