from .hashgrid import HashEncoder, hash_encode

__all__ = ["HashEncoder", "hash_encode"]
