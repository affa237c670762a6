SELECT parent, rows FROM paystream.partition_default_rows
