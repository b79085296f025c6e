"""The bench's peers: the same payment done with two libraries our users might pick instead
of txbroker (``manage.py bench --designs celery_outbox,procrastinate``).

- :mod:`harness.peers.outbox`: django-celery-outbox. The three consumer tasks are rows of
  its outbox table, written in the payment's transaction; its relay
  (``manage.py celery_outbox_relay``) publishes them to Celery; Celery workers run them.
- :mod:`harness.peers.jobs`: procrastinate's Django contrib. Three jobs deferred in the
  payment's transaction (through Django's connection); ``manage.py procrastinate worker``
  runs them.

Both run the same consumer services as the naive design (:mod:`harness.peers.handlers`).
Their Django apps are installed with the harness only, on PostgreSQL (config.settings).
"""
