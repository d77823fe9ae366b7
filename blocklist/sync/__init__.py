"""ASP side: follow the authority, verify every byte, keep the last verified list, ack."""
