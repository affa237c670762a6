SELECT day FROM paystream.holiday WHERE calendar = $1
