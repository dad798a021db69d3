"""Model stage: resolving and loading the encoder and classifier (`loading`), how much of it trains
(`finetune`), saving and reloading a run's model (`saving`), and the wrapper that runs a method's heads beside the
classifier (`heads`)."""
