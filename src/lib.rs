//! meteor-operator: runs fleets of Meteor.js apps on Kubernetes.

pub mod api;
