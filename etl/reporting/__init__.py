"""What people read: the reporting views and their macros (``views``), the report's sections
(``report``) and its renderers (``formats``: text, JSON, CSV; ``html``: the page and its SVG
charts), and the historical analytics (``analytics``)."""
