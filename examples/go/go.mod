module example.com/hm-example-go

go 1.22
