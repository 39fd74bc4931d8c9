"""The Talos client: Producer, Consumer and Admin."""

from .admin import Admin, PartitionDescription, TopicDescription
from .consumer import Consumer, Message, TopicPartition
from .producer import Producer, RecordMetadata

__all__ = [
    "Admin",
    "Consumer",
    "Message",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
