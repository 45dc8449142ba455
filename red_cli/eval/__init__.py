"""Everything after training: `red eval` (``evaluate``, ``sides``, ``judges``, ``cost``,
``store``, ``stats``), `red report` (``report``) and `red explain` (``explain``)."""
