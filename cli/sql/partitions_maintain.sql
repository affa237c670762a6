SELECT parent, partition, action, moved FROM paystream.maintain_partitions($1)
