-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d):
-- a database per service, as in `make up` and the Helm chart. compose.yaml's migration
-- services then create the schema in each.
CREATE DATABASE billing_tax;
CREATE DATABASE billing_discount;
CREATE DATABASE billing_invoice;
CREATE DATABASE billing_payment;
