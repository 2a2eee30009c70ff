"""Operations: what a person uses to watch and steer a running router.

status_page.html + page.py  the live status page served at GET / on the admin listener
notify.py                   webhook notifications: coalescing, failover episodes, delivery
drill.py + drill_run.py     `edge-router drill`: the verdict (pure) and the run against a router
"""
