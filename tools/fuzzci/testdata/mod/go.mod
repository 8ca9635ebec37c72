module example.com/fuzzcimod

go 1.26
