// For the quota test: navigator.storage.estimate() reports a 5 MB quota to the worker. (Chromium's CDP quota
// override makes writes fail but leaves estimate() as it was; the worker's pre-check reads estimate().)
const estimate = navigator.storage.estimate.bind(navigator.storage);
navigator.storage.estimate = async () => ({ ...(await estimate()), quota: 5_000_000 });
