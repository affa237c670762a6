SELECT business_date FROM paystream.business_date WHERE calendar = $1
