module sensor-tests/modelclient

go 1.19
