"""The operator's side: ``send``, ``watch``, ``deploy`` and friends, ``fleet``, ``capture
pull``, ``roster``, signing. It talks to agents over the broker and never imports the
core."""
