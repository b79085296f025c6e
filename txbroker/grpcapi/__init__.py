"""RocketMQ 5's gRPC protocol (``apache.rocketmq.v2.MessagingService``) served by txbroker, so
that the official Apache clients (Java, Go, C++, Node.js, Rust, Python) use txbroker as
their broker: ``manage.py txbroker_grpc``.

``server``: the gRPC server, its thread pool and TLS; ``auth``: the clients' signatures;
``service``: the servicer, made of ``session`` (routes, heartbeats, telemetry streams),
``producing`` (SendMessage, EndTransaction) and ``consuming``; ``checks``: check-back of
remote producer groups over their telemetry streams; ``clients``: the live clients, in the
database and in this process; ``bodies``: message bodies as bytes and as JSON.

Nothing here is imported unless a process serves gRPC, but ``models`` (the GrpcClient
table, part of txbroker's models): the protocol modules come from the official Python
client's wheel (``rocketmq-python-client``, see requirements.txt).
"""
