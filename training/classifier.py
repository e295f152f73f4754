"""The classifier that is fine-tuned and exported: encoder, mean pooling, one linear layer.

Mean pooling over the attention mask is what multilingual-e5 was trained with, so the pooled
vector is meaningful before fine-tuning starts. The exported graph takes exactly what the
tokenizer produces (input_ids, attention_mask) and returns logits; softmax is the service's job.
"""

from __future__ import annotations

import torch
from torch import nn


class MeanPoolClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))
