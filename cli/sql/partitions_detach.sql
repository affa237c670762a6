SELECT parent, partition FROM paystream.detach_partitions_before($1)
