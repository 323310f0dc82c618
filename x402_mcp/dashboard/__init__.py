"""`x402-image-mcp dashboard`: a read-only local web page of what was bought and what it cost.

The gallery (saved images, newest first, with their payments and edit chains) and the spending page
(30 days against the daily budget, totals per tool and user, unresolved payments, the wallet's
balance). It reads the ledger and the saved files only and never signs or spends; its CSS, script
and chart are its own files, so it works offline. Modules: access (the token, the response
headers), reader (keyset pages, read-only connection), present and pages (what is shown, escaped),
files, thumbs and media (the images), balance (the chain read), state (what routes share), app (the
pages and JSON), serve (the command).
"""
