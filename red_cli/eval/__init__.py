"""Everything after training: `red eval` (``evaluate``, ``sides``, ``judges``, ``store``,
``stats``), `red report` (``report``) and `red explain` (``explain``)."""
