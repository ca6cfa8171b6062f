"""Who really sent a message: SPF, DKIM, DMARC and ARC, results reused from trusted
upstream servers, and DNS blocklists. Runs before the analyzers and leaves what it proved
on ``ParsedMessage.auth`` (``mailguard.model.AuthResults``).

Kept light on purpose: the [auth] and [dns] schemas live in this package and are imported
whenever configuration is loaded, so nothing here pulls in dnspython or dkimpy; ``stage``
(the authentication stage) does.
"""
