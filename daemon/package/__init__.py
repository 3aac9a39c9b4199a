"""ingestd: files and API payloads into PostgreSQL bronze tables through RabbitMQ.

The code lives in ``ingestd.daemon`` (the long-running process and the
command line), ``ingestd.consumers`` (what happens to one event) and
``ingestd.sql`` (the schema).
"""
