//! End-to-end tests: real HTTP against shopchat, a real MariaDB/MySQL
//! database per test (`SHOPCHAT_TEST_DATABASE_URL`, see `scripts/test.sh`).

mod authz;
mod cluster;
mod concurrency;
mod faults;
mod golden;
mod helpers;
mod hostile;
mod limits;
mod longpoll;
mod mail;
mod nginx;
mod openapi;
mod ops;
mod pipeline;
mod process;
mod raw_http;
mod reads;
mod real_app;
mod redis_store;
mod shadow;
mod throttle;
mod tls;
mod web_side;
mod writes;
