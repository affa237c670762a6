SELECT paystream.anonymisation_execute($1)
