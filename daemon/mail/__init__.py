"""Mail as data: parsing received mail, trimming replies, bounces, writing MIME, our addresses and reply tokens."""
