module goropeer

go 1.19
