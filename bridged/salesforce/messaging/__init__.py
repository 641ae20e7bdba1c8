"""Enhanced Chat (Messaging for In-App and Web): the second Salesforce backend.

The sans-I/O core: :mod:`.sse` (the event-stream parser), :mod:`.wire` (the JSON bodies) and
:mod:`.protocol` (one hand-over as a state machine). The shell (transport, actor) drives them.
"""
