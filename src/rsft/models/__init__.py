"""LightningModules that rsft fine-tunes on accepted sets, one module per ``conf/model/`` option family.

Nothing is imported here on purpose: a run loads only the model its config names (``_target_:
rsft.models.<module>.<Class>``), so a credit run never imports the flow or the language models, and
``rsft-docs stale`` can tell which published figures a change to one model touches.
"""
