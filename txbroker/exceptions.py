from __future__ import annotations


class TxBrokerError(Exception):
    """Base class of txbroker's errors."""


class ConfigurationError(TxBrokerError):
    """txbroker is used in a way it cannot honour (says what to do instead)."""


class MessageNotFound(TxBrokerError):
    """No message has this id."""


class InvalidTransition(TxBrokerError):
    """The message or delivery is not in a state that allows the requested move."""


class NoConsumer(TxBrokerError):
    """No consumer is registered in this process for a delivery's group and topic."""
